from gpuconv.cli.app import main

main()
