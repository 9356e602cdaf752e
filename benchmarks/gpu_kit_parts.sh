#!/usr/bin/env bash
# Lay the vLLM GPU kit (../shared/gpu/vllm/build-kit.sh .vk-build) out as seven carry folders
# .vkp0 ... .vkp6 of <= 50 MiB each: the kit's own 55 MiB parts plus this checkout (~11 MiB) would
# pass the device tool's 64 MiB per call. The parts are a re-split of the same archive; its sha256
# (the kit's) is what assemble_and_install.sh checks after joining them. Hydra's wheels (.whl, from
# ../shared/gpu/wheels.sh) ride in the last folder. Then, back to back (the lease stays warm ~30 s):
#   run carry=[".vkp0"]: mkdir -p /tmp/vkparts && cp .vkp0/* /tmp/vkparts/
#   run carry=[".vkpN"]: cp .vkpN/* /tmp/vkparts/                        (N = 1..5)
#   run carry=[".vkp6"]: cp .vkp6/vllmkit* /tmp/vkparts/ && bash /tmp/vkparts/assemble_and_install.sh \
#       /tmp/vkparts /tmp/vsite && python3 -m pip install -q --no-index --no-deps --no-compile \
#       --upgrade --target /tmp/site .vkp6/*.whl && OUT=$OUT bash benchmarks/gpu_vllm.sh test
# (.git/info/exclude needs /.vk-build/ /.whl/ /.vkp*/)
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.vk-build/parts re=.vk-build/re
[ -f "$kit/SHA256SUMS" ] || { echo "no kit in $kit: run ../shared/gpu/vllm/build-kit.sh .vk-build"; exit 1; }
rm -rf "$re" .vkp[0-9] && mkdir -p "$re"
cat "$kit"/vllmkit-wheels.tar.part-* | split -b 50M -d -a 2 - "$re/vllmkit-wheels.tar.part-"
(cd "$re" && sha256sum vllmkit-wheels.tar.part-* && grep ' vllmkit-wheels.tar$' "../parts/SHA256SUMS") > "$re/SHA256SUMS"
n=$(ls "$re"/vllmkit-wheels.tar.part-* | wc -l)
for ((i = 0; i < n; i++)); do mkdir ".vkp$i" && ln "$re/vllmkit-wheels.tar.part-0$i" ".vkp$i/"; done
ln "$re/SHA256SUMS" "$kit"/*.sh "$kit"/smoke.py .vkp0/
last=$((n - 1)); ln .whl/*.whl ".vkp$last/" 2>/dev/null || echo "no .whl: run ../shared/gpu/wheels.sh"
du -sh .vkp*
