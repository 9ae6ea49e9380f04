from gpuconv.cli import main

main()
