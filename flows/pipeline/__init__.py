"""The pipeline: the flows that take requests in, decide them and deliver, and their steps."""
