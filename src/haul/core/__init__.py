"""The upload core: one implementation of create / append / finish / concatenate / expire,
shared by every HTTP surface and independent of any storage or database library."""
