"""Writers turn plain result arrays into files; they never know which backend produced them."""
