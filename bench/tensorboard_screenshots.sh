#!/usr/bin/env bash
# What TensorBoard shows of a run, checked through its HTTP API and a real browser.
#
#   bash bench/tensorboard_screenshots.sh [out folder, default /tmp/tb_screenshots]
#
# Trains one seconds-long co-training run (tests/configs/tiny_bridge.yaml, tested after fit), starts
# `tensorboard` on localhost, checks through its HTTP API that the scalars (each model's loss, learning rates,
# metrics), the HPARAMS tab (the whole config, both models' test metrics) and the figures (NDCG@10 by bucket)
# are there, then saves screenshots of the SCALARS, HPARAMS and IMAGES pages taken by headless Chromium
# (Debian: apt-get install chromium). Run it from the repository root in the project's virtual environment;
# it needs matplotlib for the figures (pip install -e ".[plots]").
set -euo pipefail

out=${1:-/tmp/tb_screenshots}
port=${TB_PORT:-6123}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "no Chromium found: apt-get install chromium" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"

python main.py fit --config tests/configs/tiny_bridge.yaml --test_after_fit true \
    --trainer.default_root_dir "$out/logs" --trainer.logger.init_args.name tiny_bdlm \
    --data.init_args.cache_dir "$out/cache" > "$out/fit.log" 2>&1

tensorboard --logdir "$out/logs" --host 127.0.0.1 --port "$port" > "$out/tensorboard.log" 2>&1 &
tb=$!
trap 'kill "$tb" 2>/dev/null || true' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 60); do curl -sf "$url/data/plugins_listing" > /dev/null && break; sleep 1; done

python - "$url" <<'EOF'
import json
import sys
import urllib.request

url = sys.argv[1]


def get(path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=60))


scalars = {tag for run in get("/data/plugin/scalars/tags").values() for tag in run}
expected = {"train/domain_loss", "train/lm_loss", "lr/domain", "lr/lm/backbone", "domain/test/ndcg@10",
            "lm/test/ndcg@10"}
assert expected <= scalars, expected - scalars
experiment = get("/data/plugin/hparams/experiment", {"experimentName": ""})
hparams = {h["name"] for h in experiment["hparamInfos"]}
metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
assert {"model.lm.backbone", "model.lm.lora_rank", "model.lm.optimizer.lr", "seed_everything"} <= hparams
assert {"domain/test/ndcg@10", "lm/test/ndcg@10"} <= metrics and "hp_metric" not in metrics
groups = get("/data/plugin/hparams/session_groups",
             {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                        "STATUS_RUNNING"],
              "colParams": [], "startIndex": 0, "sliceSize": 10})
values = {m["name"]["tag"]: m["value"] for m in groups["sessionGroups"][0]["metricValues"]}
images = {tag for run in get("/data/plugin/images/tags").values() for tag in run}
assert any(tag.startswith("test/ndcg@10_by_bucket/") for tag in images), images
print(f"scalars: {len(scalars)} tags; hparams: {len(hparams)}; HPARAMS metrics: "
      + ", ".join(f"{k}={v:.4f}" for k, v in sorted(values.items()) if "/test/ndcg@10" in k)
      + f"; images: {sorted(images)}")
EOF

for page in scalars hparams images; do
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1100 \
        --virtual-time-budget=15000 --screenshot="$out/$page.png" "$url/#$page" > /dev/null 2>&1
done
ls -l "$out"/*.png
