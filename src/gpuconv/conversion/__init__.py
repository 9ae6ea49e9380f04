"""The conversion job: the pipeline, its executors (threads, processes, Dask), the manifest."""
