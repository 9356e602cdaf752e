"""After the cycles: statistics, attribution, roofline, serving metrics, validity."""
