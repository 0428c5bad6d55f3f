"""Helpers the tests share: fakes, tiny models, fixtures built by hand (imported as `helpers.NAME`)."""
