"""Token pruning: the pruned model, its FLOPs model and keep-ratio schedules."""
