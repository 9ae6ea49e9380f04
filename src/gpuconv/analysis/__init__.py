"""Numbers about label volumes: agreement (Dice, HD95), lesion-wise detection, calcium scores,
majority vote, EDT, Table-1 statistics, plots; and predictions assembled back into 3D."""
