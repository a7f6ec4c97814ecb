"""Generated from proto/clerkmirror/v1 by clients/python/generate.py. Do not edit."""
