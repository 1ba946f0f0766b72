#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into tests/fuzz/corpus/<target>/ (committed; run again
only to change them). Every seed is a small valid input of its reader, written here from the
format's description (or, for the checkpoint metadata, taken from a tiny foldtron run, and for the
Hugging Face configs, from ../shared/reference/hf), so mutants reach past the first checks.
Usage: tests/fuzz/make_seeds.py [--foldtron build/bin/foldtron]
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors():
    tensors = {"a.weight": ("F32", [2, 3], struct.pack("<6f", *range(6))),
               "b.bias": ("BF16", [4], bytes(8)),
               "c.ids": ("I64", [2], struct.pack("<2q", 7, -1))}
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    put("safetensors", "three_tensors.safetensors", struct.pack("<Q", len(text)) + text + data)
    put("safetensors", "empty.safetensors", struct.pack("<Q", 2) + b"{}")


def index(dtype_code, token_bytes, lengths, document_ends):
    out = b"MMIDIDX\0\0" + struct.pack("<QBQQ", 1, dtype_code, len(lengths), len(document_ends) + 1)
    out += struct.pack(f"<{len(lengths)}i", *lengths)
    offsets, at = [], 0
    for n in lengths:
        offsets.append(at)
        at += n * token_bytes
    out += struct.pack(f"<{len(lengths)}q", *offsets)
    return out + struct.pack(f"<{len(document_ends) + 1}q", 0, *document_ends)


def indexed_dataset():  # the target's .bin has 1,000 bytes
    put("indexed_dataset", "uint16.idx", index(8, 2, [100, 150, 250], [1, 3]))
    put("indexed_dataset", "uint8.idx", index(1, 1, [10, 990], [2]))
    put("indexed_dataset", "int32.idx", index(4, 4, [50, 50, 50, 50, 50], [1, 2, 5]))


def config_yaml():
    for name in ("tiny-moe.yaml", "tiny-dense.yaml", "demo.yaml"):
        shutil.copy(os.path.join(ROOT, "configs", name), os.path.join(HERE, "corpus", "config_yaml", name))
    put("config_yaml", "layout.yaml", "parallel:\n  tp: 2\n  ep: 4\n  pp: 2\ntrain:\n  global_batch_size: 64\n"
                                      "checkpoint:\n  save: ckpt\n  save_interval: 10\n  on_save_error: warn\n")


def mo():
    po = r'''msgid ""
msgstr ""
"Language: de\n"
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n != 1);\n"

msgid "Open file"
msgstr "Datei öffnen"

msgctxt "menu"
msgid "Quit"
msgstr "Beenden"

msgid "%d file"
msgid_plural "%d files"
msgstr[0] "%d Datei"
msgstr[1] "%d Dateien"
'''
    with tempfile.TemporaryDirectory() as d:
        for charset in ("UTF-8", "ISO-8859-1"):
            text = po.replace("charset=UTF-8", f"charset={charset}")
            path = os.path.join(d, "a.po")
            with open(path, "wb") as f:
                f.write(text.encode("utf-8" if charset == "UTF-8" else "latin-1"))
            subprocess.run(["msgfmt", "-o", os.path.join(d, "a.mo"), path], check=True)
            with open(os.path.join(d, "a.mo"), "rb") as f:
                put("mo", f"de_{charset.lower()}.mo", f.read())


def conll():
    rows = [{"ID": 1, "DocID": "wsj_2105", "Type": "Implicit", "Sense": ["Contingency.Cause.Reason"],
             "Connective": {"RawText": "because"}, "Arg1": {"RawText": "Prices fell"},
             "Arg2": {"RawText": "demand was weak"}},
            {"ID": 2, "DocID": "wsj_2105", "Type": "EntRel", "Sense": ["EntRel"], "Connective": {"RawText": ""},
             "Arg1": {"RawText": "a"}, "Arg2": {"RawText": "b"}}]
    put("conll", "relations.json", "".join(json.dumps(r) + "\n" for r in rows))


def pdtb():
    header = ["Relation", "Section", "FileNumber"]
    header += ["Connective_" + c for c in ("SpanList", "GornList", "Trees", "RawText", "StringPosition")]
    header += ["SentenceNumber", "ConnHead", "Conn1", "Conn2", "ConnHeadSemClass1", "ConnHeadSemClass2",
               "Conn2SemClass1", "Conn2SemClass2"]
    attribution = ["Source", "Type", "Polarity", "Determinacy", "SpanList", "GornList", "Trees", "RawText"]
    header += ["Attribution_" + a for a in attribution]
    for arg in ("Arg1", "Arg2"):
        header += [f"{arg}_{c}" for c in ("SpanList", "GornList", "Trees", "RawText")]
        header += [f"{arg}_Attribution_{a}" for a in attribution]
    for sup in ("Sup1", "Sup2"):
        header += [f"{sup}_{c}" for c in ("SpanList", "GornList", "Trees", "RawText")]
    header.append("FullRawText")

    def row(values):
        return ",".join('"' + values[h].replace('"', '""') + '"' if h in values else "" for h in header) + "\r\n"

    text = ",".join(header) + "\r\n"
    text += row({"Relation": "Implicit", "Section": "21", "FileNumber": "05", "Conn1": "because",
                 "ConnHeadSemClass1": "Contingency.Cause.Reason", "Arg1_RawText": "Prices fell, \"sharply\",\nin May",
                 "Arg2_RawText": "demand was weak"})
    text += row({"Relation": "Explicit", "Section": "3", "FileNumber": "11", "Connective_RawText": "but",
                 "ConnHeadSemClass1": "Comparison.Contrast", "Arg1_RawText": "x", "Arg2_RawText": "y"})
    put("pdtb", "pdtb2.csv", text)


def hf_config():
    reference = os.path.join(ROOT, "..", "shared", "reference", "hf")
    for model in sorted(os.listdir(reference)):
        shutil.copy(os.path.join(reference, model, "config.json"), os.path.join(HERE, "corpus", "hf_config",
                                                                                f"{model}.json"))


def checkpoint_metadata(foldtron):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([foldtron, "train", "--preset", "tiny-dense", "--set", "model.num_layers=1", "--set",
                        "train.train_iters=1", "--set", f"checkpoint.save={d}/ckpt"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(d, "ckpt", "iter_0000001", "metadata.json"), "rb") as f:
            text = f.read()
    put("checkpoint_metadata", "tiny_dense_1_layer.json", text)
    # The same checkpoint cut to two tensors, their files and a config without comments: a seventh
    # of the bytes, so the fuzzer spends its time on the structure rather than parsing the bulk.
    full = json.loads(text)
    keep = dict(list(full["tensors"].items())[:2])
    used = sorted({p["file"] for t in keep.values() for p in t["pieces"]})
    for tensor in keep.values():
        for piece in tensor["pieces"]:
            piece["file"] = used.index(piece["file"])
    small = dict(full, tensors=keep, files=[full["files"][f] for f in used])
    config = [line.split("#")[0].rstrip() for line in full["state"]["config"].splitlines()]
    small["state"] = dict(full["state"], config="\n".join(line for line in config if line.strip()) + "\n")
    put("checkpoint_metadata", "tiny_dense_two_tensors.json", json.dumps(small, sort_keys=True).encode())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--foldtron", default=os.path.join(ROOT, "build", "bin", "foldtron"))
    args = parser.parse_args()
    # Rewrite the generated seeds; keep the inputs that found bugs (found_*, added by hand).
    corpus = os.path.join(HERE, "corpus")
    for target in os.listdir(corpus) if os.path.isdir(corpus) else []:
        for name in os.listdir(os.path.join(corpus, target)):
            if not name.startswith("found_"):
                os.remove(os.path.join(corpus, target, name))
    for target in ("config_yaml", "hf_config"):
        os.makedirs(os.path.join(corpus, target), exist_ok=True)
    safetensors()
    indexed_dataset()
    config_yaml()
    mo()
    conll()
    pdtb()
    hf_config()
    checkpoint_metadata(args.foldtron)


if __name__ == "__main__":
    main()
