#!/usr/bin/env python3
"""Lays out what the Deployment's pods would see, for `sdbridge check`.

    lay_out.py DIR MANIFEST...

Writes every ConfigMap the Deployment mounts into DIR at its mountPath
(DIR/etc/sdbridge/config/sdbridge.yml, ...), then prints the path of the
config its `--config` argument names, under DIR, and the number of files
the ConfigMaps mounted beside it hold (what `sdbridge check` should find).
"""

import os
import sys

import yaml


def main():
    root, manifests = sys.argv[1], sys.argv[2:]
    docs = []
    for path in manifests:
        with open(path, encoding="utf-8") as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = container["args"]
    config = args[args.index("--config") + 1]
    files = 0
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        data = configmaps[source["name"]]["data"]
        directory = os.path.join(root, mount["mountPath"].lstrip("/"))
        os.makedirs(directory, exist_ok=True)
        for key, text in data.items():
            with open(os.path.join(directory, key), "w", encoding="utf-8") as f:
                f.write(text)
            if os.path.join(mount["mountPath"], key) != config:
                files += 1
    print(os.path.join(root, config.lstrip("/")), files)


if __name__ == "__main__":
    main()
