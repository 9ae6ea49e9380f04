"""What a corpus is: exam ids and splits, the class list, the header-only plan, grid checks and placement, the synthetic corpus."""
