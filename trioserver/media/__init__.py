"""The media repository (issue 12, spec "Content repository"): files, thumbnails, previews.

`filestore` keeps the bytes on disk, `headers` decides how a download is served safely and
`thumbnails` makes thumbnails; the metadata is in `trioserver.stores.media`, the logic in
`trioserver.handlers.media` and the routes in `trioserver.api.client.media`.
"""
