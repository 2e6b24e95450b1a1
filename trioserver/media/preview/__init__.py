"""URL previews (spec "Content repository", ``GET /preview_url``): OpenGraph data of a web
page, fetched by the server through a guarded client and cached."""
