"""`jifen whatif`: replay a programme's real history under the version in force and under a draft, side by side."""
