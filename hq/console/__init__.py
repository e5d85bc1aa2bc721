"""HQ's web console (`edge-hq console`): signed-in screens over the HQ store."""
