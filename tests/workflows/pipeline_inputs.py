"""The inputs of a demo run (ERR9000001, paired) as the assembly pipeline's tests build jobs from them."""

from workflows.ena.runs import RunInputs

MD5_1 = "32bcc3950615f3640a4e2c438faf729a"
MD5_2 = "c5f1e7a2d79558422efacb66d289c4cd"
URL_1 = "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR900/001/ERR9000001/ERR9000001_1.fastq.gz"
URL_2 = "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR900/001/ERR9000001/ERR9000001_2.fastq.gz"
PAIRED_RUN = RunInputs("ERR9000001", "PAIRED", (URL_1, URL_2), (MD5_1, MD5_2))
