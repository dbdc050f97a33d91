"""Model cards: what a shipped model was trained on, how it scores, and how well a scan matches
it."""
