"""What a corpus is: exam ids and splits, the class list, the header-only plan, the grid check
and placement, the synthetic corpus."""
