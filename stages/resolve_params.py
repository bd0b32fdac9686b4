"""Stage resolve_params: the params the features and train stages read for the selected model,
data/params/{features,train}.json (core.reads). Every section those stages may read is checked here first,
whatever the model, so a misspelt key stops the pipeline in a second, before any work. A change to a param
the selected model does not read (train.head for basecnn) rewrites the same bytes, and DVC reruns nothing."""
from core.io import atomic_dir, write_json
from core.reads import RESOLVED, resolve


def main(params, out_dir="data/params"):
    params = resolve(params, "resolve_params")  # every section the model stages may read, checked
    with atomic_dir(out_dir) as tmp:
        for stage in RESOLVED:
            write_json(tmp / f"{stage}.json", resolve(params, stage))
    print(f"{params['model']}: params of {', '.join(RESOLVED)} written to {out_dir}/")


if __name__ == "__main__":
    from core.cli import run
    run(main)
