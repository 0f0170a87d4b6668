"""REST routers, mounted under ``/v1`` by :func:`datawave.datasource.serve.app.create_app`."""
