"""Numbers about label volumes: agreement (Dice, HD95), majority vote, EDT, Table-1 statistics, plots."""
