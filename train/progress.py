from arkd_env.progress import bar, say, track

__all__ = ["bar", "say", "track"]
