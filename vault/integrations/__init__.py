"""Front doors made for one backup product each: they translate its calls to the services."""
