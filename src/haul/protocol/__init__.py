"""Pure protocol helpers: parsing and formatting of headers. No I/O lives here."""
