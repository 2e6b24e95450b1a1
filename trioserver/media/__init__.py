"""The media repository: files, thumbnails and URL previews."""
