#!/bin/sh
# One vLLM engine rank of the seed's PD deployment on kvtier: what the seed's
# prefill.sh and decode.sh run, for either role. prefill.sh / decode.sh call
# it as `engine.sh ROLE` followed by the seed's positional arguments (which
# kvtier-launch passes, see *_node.yaml):
#   device_list local_ip nic_name server_port tp_size dp_size dp_rank
#   dp_address dp_rpc_port kv_port
# P->D mode (KVTIER_PD_MODE):
#   store (default): prefill runs UCMConnector kv_both and saves every full
#                    prompt block to the shared store; decode runs it as
#                    kv_consumer and loads them from there.
#                    KVTIER_PREFILL_ROLE=kv_producer makes the prefill side
#                    save-only (it never loads from the store: the seed
#                    benchmark's Recalculation and HBM PC baselines).
#   nixl:            prefill runs MultiConnector[NixlConnector, UCMConnector]
#                    (the seed's shape, NIXL in Mooncake's place); decode runs
#                    NixlConnector and pulls the KV from the prefill rank.
# Site settings from the environment: KVTIER_MODEL (required),
# KVTIER_UCM_CONFIG (required in store mode and on prefill), KVTIER_PYTHON
# (default python3), KVTIER_ENGINE_ARGS (extra engine flags), KVTIER_DP_GROUP
# (set for MoE models: keep vLLM's DP group, as the seed does with
# --enable-expert-parallel; dense models run DP ranks as independent engines),
# KVTIER_NIXL_BUFFER_DEVICE (NIXL's kv_buffer_device: "cpu" for CPU engines;
# unset: vLLM's default), KVTIER_LOAD_ASYNC (true or false: kvtier_load_async
# of every kvtier connector; unset: the connector's default, false),
# KVTIER_NIXL_PROGRESS_DELAY_US (set: NIXL's progress thread sleeps that long
# between polls, through kvtier's NixlConnector subclass,
# kvtier.integration.vllm.nixl_pacing; unset: vLLM's own class, whose thread
# busy-polls a core; docs/pd.md).
set -eu
role=$1
device_list=$2 local_ip=$3 nic_name=$4 server_port=$5 tp_size=$6 dp_size=$7
dp_rank=$8 dp_address=$9 dp_rpc_port=${10} kv_port=${11}
mode=${KVTIER_PD_MODE:-store}
hma_off=
prefill_role=${KVTIER_PREFILL_ROLE:-kv_both}
case "$prefill_role" in
  kv_both|kv_producer) ;;
  *) echo "engine.sh: KVTIER_PREFILL_ROLE must be kv_both or kv_producer (got $prefill_role)" >&2
     exit 2 ;;
esac

export PYTHONHASHSEED=0 PYTHONUNBUFFERED=1
export GLOO_SOCKET_IFNAME=$nic_name TP_SOCKET_IFNAME=$nic_name
export CUDA_VISIBLE_DEVICES=$device_list
export VLLM_NIXL_SIDE_CHANNEL_HOST=$local_ip VLLM_NIXL_SIDE_CHANNEL_PORT=$kv_port

case "${KVTIER_NIXL_PROGRESS_DELAY_US:-0}" in
  *[!0-9]*) echo "engine.sh: KVTIER_NIXL_PROGRESS_DELAY_US must be a number of microseconds" \
                 "(got $KVTIER_NIXL_PROGRESS_DELAY_US)" >&2; exit 2 ;;
esac

# NIXL's side: kv_buffer_device only where the site sets it.
# KVTIER_NIXL_PROGRESS_DELAY_US: the same connector name from kvtier's module.
nixl() {  # NixlConnector in role $1
  paced=
  if [ -n "${KVTIER_NIXL_PROGRESS_DELAY_US:-}" ]; then
    paced=', "kv_connector_module_path": "kvtier.integration.vllm.nixl_pacing",
             "kv_connector_extra_config": {"nixl_progress_delay_us": '"$KVTIER_NIXL_PROGRESS_DELAY_US"'}'
  fi
  echo '{"kv_connector": "NixlConnector", "kv_role": "'"$1"'"'"${KVTIER_NIXL_BUFFER_DEVICE:+, \"kv_buffer_device\": \"$KVTIER_NIXL_BUFFER_DEVICE\"}"$paced'}'
}
case "${KVTIER_LOAD_ASYNC:-}" in
  ''|true|false) ;;
  *) echo "engine.sh: KVTIER_LOAD_ASYNC must be true or false (got $KVTIER_LOAD_ASYNC)" >&2
     exit 2 ;;
esac
ucm() {  # the kvtier connector in role $1
  async=
  if [ -n "${KVTIER_LOAD_ASYNC:-}" ]; then
    async=', "kvtier_load_async": '"$KVTIER_LOAD_ASYNC"
  fi
  echo '{"kv_connector": "UCMConnector", "kv_role": "'"$1"'",
         "kv_connector_module_path": "kvtier.integration.vllm.ucm_connector",
         "kv_load_failure_policy": "recompute",
         "kv_connector_extra_config": {"UCM_CONFIG_FILE": "'"$KVTIER_UCM_CONFIG"'"'"$async"'}}'
}
case "$role/$mode" in
  prefill/store) ktc=$(ucm "$prefill_role") ;;
  prefill/nixl)  ktc='{"kv_connector": "MultiConnector", "kv_role": "kv_producer",
                       "kv_connector_extra_config": {"connectors": [
                         '"$(nixl kv_producer)"',
                         '"$(ucm kv_both)"']}}' ;;
  decode/store)  ktc=$(ucm kv_consumer) ;;
  # The prefill's MultiConnector holds UCMConnector, which has no hybrid-
  # allocator (HMA) support, so vLLM turns HMA off there; NIXL refuses a peer
  # whose HMA setting differs (its compatibility hash), so decode turns it off.
  decode/nixl)   ktc=$(nixl kv_consumer)
                 hma_off=--disable-hybrid-kv-cache-manager ;;
  *) echo "engine.sh: role must be prefill or decode, KVTIER_PD_MODE store or nixl" \
          "(got $role, $mode)" >&2; exit 2 ;;
esac

exec "${KVTIER_PYTHON:-python3}" -m vllm.entrypoints.openai.api_server \
  --model "$KVTIER_MODEL" --host "$local_ip" --port "$server_port" \
  --tensor-parallel-size "$tp_size" --seed 1024 \
  ${KVTIER_DP_GROUP:+--data-parallel-size "$dp_size" --data-parallel-rank "$dp_rank"} \
  ${KVTIER_DP_GROUP:+--data-parallel-address "$dp_address" --data-parallel-rpc-port "$dp_rpc_port"} \
  ${KVTIER_ENGINE_ARGS:-} $hma_off \
  --kv-transfer-config "$ktc"
