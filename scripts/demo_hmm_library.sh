#!/usr/bin/env bash
# The demo's profile-HMM library, the default `hmm_library` of workflows/pipelines/assembly_analysis/spec.yaml:
# real profiles Debian's hmmer-examples ships (Pkinase, fn3, globins4, LuxC, SMC_N, RRM_1), in one file.
# Idempotent. Usage: demo_hmm_library.sh [TARGET]
set -euo pipefail
target=${1:-/usr/local/share/emgapi/hmm/demo-profiles.hmm}
examples=/usr/share/doc/hmmer/examples
[ -s "$target" ] && exit 0
echo "building the demo profile-HMM library $target"
mkdir -p "$(dirname "$target")"
# One file holds profiles of one format: hmmconvert writes each in the current one.
{
  for hmm in "$examples"/tutorial/{Pkinase,fn3,globins4}.hmm; do hmmconvert "$hmm"; done
  for hmm in "$examples"/testsuite/{LuxC,SMC_N,RRM_1}.hmm.gz; do zcat "$hmm" | hmmconvert -; done
} > "$target.part"
mv -f "$target.part" "$target"
