"""The HTTP face beside /hooks/: health, metrics and the admin API."""
