"""What `python -m nanoagent.rl` is made of (the command is rl.py, beside train.py): the GRPO round and update
(grpo.py), the rewards (rewards.py), the prompts a round takes (prompts.py), and the sampling arms of learning
verifiable instructions: rejection sampling (rejection.py) and repaired replies (repair.py)."""
