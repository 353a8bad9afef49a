# Sharding tests (tests/shard/): real `shardserve shard` and `shardserve run --shards` processes,
# checked with numpy. shard_data (fixtures.sh) generates the seed model and the exporter-shaped
# MLP / BERT-tiny / GPT-2-tiny cases once into the build folder; every other test requires it.
# Each script runs the groups it starts in their own process group and, on any exit, kills what
# is left of them and removes their /dev/shm/shardserve-run-* segments.
if(TARGET shardserve)
  set(SS_SHARD_DIR ${SS_TEST_DIR}/shard)
  set(SS_SHARD_ENV "SS_SHARDSERVE=$<TARGET_FILE:shardserve>" "SS_SHARD_DATA=${CMAKE_BINARY_DIR}/shard-data")

  add_test(NAME shard_data COMMAND ${SS_SHARD_DIR}/fixtures.sh)
  set_tests_properties(shard_data PROPERTIES FIXTURES_SETUP shard_data ENVIRONMENT "${SS_SHARD_ENV}"
                       TIMEOUT 300 LABELS shard)

  # ss_shard_test(NAME TIMEOUT SCRIPT ARGS...)
  function(ss_shard_test name timeout script)
    add_test(NAME ${name} COMMAND ${SS_SHARD_DIR}/${script} ${ARGN})
    set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED shard_data ENVIRONMENT "${SS_SHARD_ENV}"
                         TIMEOUT ${timeout} LABELS shard SKIP_RETURN_CODE 77)
  endfunction()

  # 1. the seed model over 8 ranks: the three MindSpore MatMul strategies and auto; all -48
  ss_shard_test(shard_seed_shm 120 seed.sh shm cols reduce rows auto)
  # impossible splits are refused with a message naming the problem
  ss_shard_test(shard_refuse 120 refuse.sh)

  # 2. sharded == unsharded (1e-4): ranks per stage x stages, the full grid on the opset-17
  # exports; BERT's opset-14 export (LayerNorm decomposed into ReduceMean/Pow/Sqrt) on two configs
  foreach(model mlp bert_tiny gpt2_tiny)
    ss_shard_test(shard_${model}_shm 300 family.sh ${model}_op17 shm 1x1 2x1 4x1 8x1 1x2 2x2 4x2 8x2)
  endforeach()
  ss_shard_test(shard_bert_tiny_op14_shm 200 family.sh bert_tiny_op14 shm 4x1 2x2)
  # PyTorch's MNIST CNN (Conv, MaxPool, Dropout, Gemm, LogSoftmax): what splits splits, the rest
  # runs whole on every rank of its stage
  ss_shard_test(shard_mnist_cnn_shm 200 family.sh mnist_cnn_op17 shm 2x1 4x1 1x2 2x2)
  # data-dependent control flow with weights inside the branches (a scripted If reading outer
  # initializers and activations): both branches, split and pipelined
  ss_shard_test(shard_gated_mlp_on_shm 200 family.sh gated_mlp_on_op17 shm 2x1 4x1 1x2 2x2)
  ss_shard_test(shard_gated_mlp_off_shm 200 family.sh gated_mlp_off_op14 shm 2x1 1x2 2x2)
  # the three strategies from a file on the exported MLP's Gemms (transB, bias): columns, then
  # reduction dim, then rows, over 4 ranks per stage
  ss_shard_test(shard_mlp_strategy_file_shm 200 family.sh mlp_op17 shm --strategy
                ${SS_SHARD_DIR}/mlp_strategy4.json 4x1 4x2)

  # --weights bf16 / int8: recorded in every group config, outputs within 1e-2 (bf16) / 2e-2 (int8:
  # each operand off by up to half an int8 step; BERT-tiny's pooler measured 1.2e-2) of f32's
  ss_shard_test(shard_bf16_weights_shm 300 weights.sh bf16 1e-2 mlp_op17 bert_tiny_op17
                gpt2_tiny_op17)
  ss_shard_test(shard_int8_weights_shm 300 weights.sh int8 2e-2 mlp_op17 bert_tiny_op17
                gpt2_tiny_op17)

  # an op the runtime's table marks elementwise stays on split tensors (no op list of the tool's own)
  ss_shard_test(shard_runtime_ops_shm 120 runtime_ops.sh shm)
  # an LSTM between split MatMul pairs runs whole on every rank, and the tool says so
  ss_shard_test(shard_lstm_shm 120 lstm.sh shm)
  # a BERT block of com.microsoft fused ops (Attention, SkipLayerNormalization, BiasGelu): run
  # whole and over 2 ranks, the fused ops replicated and the tool says so
  ss_shard_test(shard_contrib_bert_shm 120 contrib_bert.sh shm)
  # a Loop body reading a split outer value: materialized on every rank and sent across cuts
  ss_shard_test(shard_loop_shm 200 loop.sh shm)

  # string initializers and string Constants reach every shard as strings
  ss_shard_test(shard_strings 60 strings.sh)

  # 3. one rank SIGKILLed mid-run: the others fail naming it, within the bound, nothing left
  ss_shard_test(shard_kill_shm 120 kill.sh shm)
  # `shardserve run` itself SIGKILLed: its ranks die with it
  ss_shard_test(shard_kill_parent_shm 120 kill.sh shm parent)

  if(SS_COMM_HAVE_MPI)
    ss_shard_test(shard_seed_mpi 120 seed.sh mpi reduce)
    # per model: tensor-parallel (2x1), pipeline (1x2) and both (2x2)
    ss_shard_test(shard_mlp_mpi 300 family.sh mlp_op17 mpi 2x1 1x2 2x2)
    ss_shard_test(shard_bert_tiny_mpi 300 family.sh bert_tiny_op17 mpi 2x1 1x2 2x2)
    ss_shard_test(shard_gpt2_tiny_mpi 300 family.sh gpt2_tiny_op17 mpi 2x1 1x2 2x2)
    ss_shard_test(shard_kill_mpi 120 kill.sh mpi)
    # 4. two "hosts": two network namespaces joined by a veth pair, a 2 + 2 split over mpi
    ss_shard_test(shard_two_hosts 200 two_hosts.sh)
  else()
    add_test(NAME shard_mpi COMMAND sh -c "echo 'the mpi backend is not built (Open MPI development files missing: install libopenmpi-dev openmpi-bin)' >&2; exit 1")
  endif()
endif()
