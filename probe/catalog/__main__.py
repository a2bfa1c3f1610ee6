"""`python -m probe.catalog`: write the parsed copies of the catalog's TOML files."""

from probe.catalog.files import write_copies

write_copies()
