# A package, so that its conftest.py (the `peaky` model these tests share) does not clash with
# tests/conftest.py: two conftest modules outside packages would both be named `conftest`.
