"""The specialist's queue and the lead workspace."""
