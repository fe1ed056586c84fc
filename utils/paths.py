"""Output folders that never overwrite earlier results."""
import os


def new_output_dir(path):
    """`path` if it is missing or empty, else the first free `path_2`, `path_3`...: never overwrite."""
    path = path.rstrip("/\\") or path
    candidate, n = path, 1
    while os.path.isdir(candidate) and os.listdir(candidate):
        n += 1
        candidate = f"{path}_{n}"
    os.makedirs(candidate, exist_ok=True)
    return candidate
