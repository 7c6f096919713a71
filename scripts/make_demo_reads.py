"""Seeded synthetic paired-end reads that MEGAHIT assembles in seconds.

Two random "organisms" (a genome of ``genome_len`` bases and one of half that) are sampled at roughly equal
coverage, so a correct assembly is a handful of long contigs whose total length is close to
``1.5 * genome_len``. Random sequence has no repeats, which is what keeps the assembly trivial.

The gzip streams are written with a fixed mtime and no embedded file name, so the same arguments always
produce byte-identical files and therefore the same md5s: the ENA stub can regenerate them at any time
without invalidating an md5 that a flow already recorded.

Usage: python scripts/make_demo_reads.py OUT_DIR [--run-accession ERR9000001] [--seed 1] ...
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_COMPLEMENT = str.maketrans("ACGT", "TGCA")
_BASES = "ACGT"
# Phred 40 everywhere: the errors are injected into the bases, and fastp must not trim the demo reads away.
_QUALITY_CHAR = "I"
_INSERT_SD_FRACTION = 0.1


def _reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def _random_genome(rng: random.Random, length: int) -> str:
    return "".join(rng.choices(_BASES, k=length))


def _with_errors(rng: random.Random, seq: str, error_rate: float) -> str:
    if error_rate <= 0:
        return seq
    bases = list(seq)
    for i, base in enumerate(bases):
        if rng.random() < error_rate:
            bases[i] = rng.choice([b for b in _BASES if b != base])
    return "".join(bases)


def _fragment(rng: random.Random, genome: str, insert: int, read_len: int) -> str:
    size = max(read_len, min(len(genome), round(rng.gauss(insert, insert * _INSERT_SD_FRACTION))))
    start = rng.randrange(0, len(genome) - size + 1)
    fragment = genome[start : start + size]
    return fragment if rng.random() < 0.5 else _reverse_complement(fragment)


def make_reads(
    out_dir: Path | str,
    *,
    run_accession: str = "ERR9000001",
    seed: int = 1,
    genome_len: int = 20000,
    n_pairs: int = 4000,
    read_len: int = 100,
    insert: int = 300,
    error_rate: float = 0.002,
) -> list[Path]:
    """Write ``<run_accession>_1.fastq.gz`` and ``_2.fastq.gz`` into ``out_dir`` and return their paths."""
    if insert < read_len:
        raise ValueError(f"insert ({insert}) must be at least read_len ({read_len})")
    if genome_len // 2 < insert:
        raise ValueError(f"genome_len ({genome_len}) must be at least twice the insert size ({insert})")
    rng = random.Random(seed)
    genomes = [_random_genome(rng, genome_len), _random_genome(rng, genome_len // 2)]
    # Picking an organism in proportion to its length gives both the same depth of coverage.
    weights = [len(g) for g in genomes]

    return _write_pairs(
        out_dir,
        run_accession,
        rng,
        lambda: _fragment(rng, rng.choices(genomes, weights=weights)[0], insert, read_len),
        n_pairs=n_pairs,
        read_len=read_len,
        error_rate=error_rate,
    )


def _write_pairs(
    out_dir: Path | str,
    run_accession: str,
    rng: random.Random,
    next_fragment: Callable[[], str],
    *,
    n_pairs: int,
    read_len: int,
    error_rate: float,
) -> list[Path]:
    """`n_pairs` read pairs, each the two ends of `next_fragment()`, into ``<run_accession>_1/_2.fastq.gz``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{run_accession}_1.fastq.gz", out / f"{run_accession}_2.fastq.gz"]
    quality = _QUALITY_CHAR * read_len
    with _deterministic_gzip(paths[0]) as r1, _deterministic_gzip(paths[1]) as r2:
        for n in range(1, n_pairs + 1):
            fragment = next_fragment()
            mate1 = _with_errors(rng, fragment[:read_len], error_rate)
            mate2 = _with_errors(rng, _reverse_complement(fragment)[:read_len], error_rate)
            r1.write(f"@{run_accession}.{n} {n}/1\n{mate1}\n+\n{quality}\n".encode())
            r2.write(f"@{run_accession}.{n} {n}/2\n{mate2}\n+\n{quality}\n".encode())
    return paths


# 16S rRNA V4 primers (the Earth Microbiome Project's 515F / 806R), with IUPAC codes, as the amplicon pipeline trims
# them; the demo's reads carry one concrete reading of each.
PRIMER_515F = "GTGYCAGCMGCCGCGGTAA"
PRIMER_806R = "GGACTACNVGGGTWTCTAAT"
_IUPAC_READING = str.maketrans("YMNVWRKSBDH", "CAAGAAGGCAA")


def make_amplicon_reads(
    out_dir: Path | str,
    *,
    run_accession: str,
    seed: int = 1,
    variants: int = 6,
    n_pairs: int = 3000,
    region_len: int = 253,
    read_len: int = 200,
    error_rate: float = 0.001,
    primers: bool = True,
) -> list[Path]:
    """Paired reads of synthetic 16S V4 amplicons: `variants` sequences (515F, a random region, 806R's reverse
    complement) at geometric abundances, so that denoising finds about `variants` ASVs. Without `primers`, the
    amplicons are the regions alone: no pair starts with a primer the amplicon pipeline trims."""
    rng = random.Random(seed)
    forward = PRIMER_515F.translate(_IUPAC_READING) if primers else ""
    reverse = PRIMER_806R.translate(_IUPAC_READING) if primers else ""
    amplicons = [
        forward + _random_genome(rng, region_len) + _reverse_complement(reverse) for _ in range(variants)
    ]
    weights = [2.0**-i for i in range(variants)]
    return _write_pairs(
        out_dir,
        run_accession,
        rng,
        lambda: rng.choices(amplicons, weights=weights)[0],
        n_pairs=n_pairs,
        read_len=read_len,
        error_rate=error_rate,
    )


# A real bacterial chromosome (174 kb; its genes and its 16S rRNA are real), as Debian's prodigal ships it for its
# tests, and a real protein, the sevenless receptor tyrosine kinase of Drosophila (2,554 aa, with Pkinase and fn3
# domains), as Debian's hmmer-examples ships it for its tutorial. Both packages are `make install`'s.
REAL_GENOME = Path("/usr/share/doc/prodigal/test-data/genome.fna.gz")
REAL_PROTEIN = Path("/usr/share/doc/hmmer/examples/tutorial/7LESS_DROME")
# One codon per amino acid: the protein back-translated is an open reading frame prodigal calls as a gene.
_CODON = dict(
    zip(
        "ARNDCQEGHILKMFPSTWYV",
        "GCT CGT AAC GAT TGC CAG GAA GGT CAT ATT CTG AAA ATG TTT CCG TCT ACC TGG TAT GTT".split(),
        strict=True,
    )
)


def real_genome_with_a_kinase(at: int = 60000) -> str:
    """REAL_GENOME with REAL_PROTEIN's coding sequence inserted at `at`: prodigal finds the chromosome's genes and
    that one, hmmsearch the kinase's domains in the demo library, barrnap the chromosome's 16S."""
    with gzip.open(REAL_GENOME, "rt") as fasta:
        chromosome = "".join(line.strip() for line in fasta if not line.startswith(">"))
    entry = REAL_PROTEIN.read_text()
    residues = "".join(
        "".join(ch for ch in line if ch.isalpha())
        for line in entry.split("\nSQ ", 1)[1].splitlines()[1:]
        if not line.startswith("//")
    )
    gene = "ATG" + "".join(_CODON[residue] for residue in residues[1:]) + "TAA"
    return chromosome[:at] + gene + chromosome[at:]


def make_genome_reads(
    out_dir: Path | str,
    *,
    run_accession: str,
    seed: int = 1,
    n_pairs: int = 23000,
    read_len: int = 100,
    insert: int = 300,
    error_rate: float = 0.002,
) -> list[Path]:
    """Paired reads sampled from real_genome_with_a_kinase() at about 25x: MEGAHIT assembles them in seconds."""
    rng = random.Random(seed)
    genome = real_genome_with_a_kinase()
    return _write_pairs(
        out_dir,
        run_accession,
        rng,
        lambda: _fragment(rng, genome, insert, read_len),
        n_pairs=n_pairs,
        read_len=read_len,
        error_rate=error_rate,
    )


# The demo runs whose reads are not the default two random genomes (make_reads' defaults), by accession.
DEMO_RUNS: dict[str, dict[str, Any]] = {
    # An assembly of about 12 kb: below the assembly analysis's threshold (20 kb), so the analysis is skipped.
    "ERR9000008": {"genome_len": 8000},
    # Amplicon runs: the amplicon pipeline's route.
    "ERR9000009": {"amplicon": True},
    "ERR9000010": {"amplicon": True, "variants": 4},
    # A real genome: genes, protein domains and a 16S that the assembly analysis finds.
    "ERR9000013": {"real_genome": True},
    # PRJEB00008: three amplicon runs trimmed, merged and denoised in batches; the third has no primer to trim.
    "ERR9000014": {"amplicon": True, "variants": 5},
    "ERR9000015": {"amplicon": True, "variants": 3},
    "ERR9000016": {"amplicon": True, "primers": False},
}


def make_demo_run(out_dir: Path | str, run_accession: str, *, seed: int) -> list[Path]:
    """The FASTQ files of one demo run: its recipe of DEMO_RUNS, or make_reads' defaults."""
    recipe = dict(DEMO_RUNS.get(run_accession, {}))
    if recipe.pop("real_genome", False):
        return make_genome_reads(out_dir, run_accession=run_accession, seed=seed, **recipe)
    if recipe.pop("amplicon", False):
        return make_amplicon_reads(out_dir, run_accession=run_accession, seed=seed, **recipe)
    return make_reads(out_dir, run_accession=run_accession, seed=seed, **recipe)


@contextmanager
def _deterministic_gzip(path: Path) -> Iterator[gzip.GzipFile]:
    """A gzip writer whose bytes depend only on the content (no timestamp, no file name in the header)."""
    # A private temporary name: two processes may generate the same demo files at once.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            yield gz
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.chmod(0o644)
    # Rename last, so a reader never sees a half-written file under the final name.
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--run-accession", default="ERR9000001")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--genome-len", type=int, default=20000)
    parser.add_argument("--n-pairs", type=int, default=4000)
    parser.add_argument("--read-len", type=int, default=100)
    parser.add_argument("--insert", type=int, default=300)
    parser.add_argument("--error-rate", type=float, default=0.002)
    args = parser.parse_args(argv)
    paths = make_reads(
        args.out_dir,
        run_accession=args.run_accession,
        seed=args.seed,
        genome_len=args.genome_len,
        n_pairs=args.n_pairs,
        read_len=args.read_len,
        insert=args.insert,
        error_rate=args.error_rate,
    )
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
