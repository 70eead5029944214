"""Writes FILES file_sd JSON files of PER targets each into DIR, with the
seed case's labels (Korean values included), for the bench scripts.

    python3 bench/gen_file_sd.py DIR FILES PER
"""
import json
import sys

d, files, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
width = max(4, len(str(files - 1)))
for f in range(files):
    groups = []
    for i in range(per):
        n = f * per + i
        groups.append({"targets": [f"127.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}:9104"],
                       "labels": {"dbms": "MySQL", "service_name": "My서비스",
                                  "db_name": "프라이머리" if i % 3 == 0 else "세컨더리", "role": "replica"}})
    with open(f"{d}/db-{f:0{width}d}.json", "w") as out:
        json.dump(groups, out, ensure_ascii=False)
