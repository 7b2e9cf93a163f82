"""The attnspec contract: clause registry, checks, strategies, tolerance and cost model."""
