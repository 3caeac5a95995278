"""The kernel every room imports: configuration, secrets, row rules, SQL helpers, table
reading and the tube scope. It imports no room of tubetrail."""
