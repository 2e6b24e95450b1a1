"""Push rules: the rule model with the server-default rules, and the rule evaluator."""
