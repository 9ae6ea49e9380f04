"""CT slices as images: HU windowing, the per-exam PNG step, the preview overlay."""
