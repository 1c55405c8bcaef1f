"""payswitch: ISO 8583 / ISO 20022 payment switch. The subpackages are the top-level folders."""
