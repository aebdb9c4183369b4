"""This cluster's local copies and homed frontends (`manager`, their one owner), kept in line with the records at start (`recovery`) and on a schedule (`convergence`)."""
