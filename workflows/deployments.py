"""The one registry of deployment names: signals dispatch to these, `serve_flows` serves them."""

ASSEMBLY_ANALYSIS_FLOW = "Assemble and analyse a study"
ASSEMBLY_ANALYSIS_DEPLOYMENT = "assembly_analysis_request_deployment"
STUDY_SYNC_FLOW = "Sync a study with ENA"
STUDY_SYNC_DEPLOYMENT = "study_sync_deployment"


def full_name(flow_name: str, deployment_name: str) -> str:
    return f"{flow_name}/{deployment_name}"


ASSEMBLY_ANALYSIS = full_name(ASSEMBLY_ANALYSIS_FLOW, ASSEMBLY_ANALYSIS_DEPLOYMENT)
STUDY_SYNC = full_name(STUDY_SYNC_FLOW, STUDY_SYNC_DEPLOYMENT)
