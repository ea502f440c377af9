"""HTTP surfaces over the upload core."""
