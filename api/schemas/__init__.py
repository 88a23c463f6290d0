"""Request and response models: they validate requests and are the source of the OpenAPI document."""
