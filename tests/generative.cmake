# Generative models (tests/generative/): tiny GPT-2 and Llama decoders with a KV cache, exported by
# PyTorch into the build folder, run by shardserve's runtime in a greedy token loop (prefill, then
# one decode step per token feeding present back as past); 64 tokens must equal PyTorch's, whole
# and sharded Megatron-style (heads, MLP pairs) over 2, 4 and 8 ranks and in 2 pipeline stages,
# on shm and on mpi, with batch, sequence and past lengths left dynamic.
# The same models rewritten by `shard --kv-pool` keep the cache in each rank's KV block pool
# (PagedAttention): no past/present tensors, and one plan for every decode step.
set(SS_GEN_DIR ${CMAKE_BINARY_DIR}/generative)
add_executable(gen_greedy ${SS_TEST_DIR}/generative/gen_greedy.c ${SS_TEST_DIR}/generative/kvloop.c)
target_link_libraries(gen_greedy PRIVATE ss_agent ss_runtime)

# The KV block pool's attention (PagedAttention's kernel) against a dense reference
ss_add_c_test(test_kvpool_attention ${SS_TEST_DIR}/generative/test_kvpool_attention.c)
target_include_directories(test_kvpool_attention PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime)
target_link_libraries(test_kvpool_attention PRIVATE ss_runtime)
set_tests_properties(test_kvpool_attention PROPERTIES LABELS generative)
add_executable(test_kvpool_session ${SS_TEST_DIR}/generative/test_kvpool_session.c)
target_include_directories(test_kvpool_session PRIVATE ${SS_TEST_DIR})
target_link_libraries(test_kvpool_session PRIVATE ss_runtime)

foreach(family gpt2 llama)
  foreach(opset 14 17)
    set(case ${family}_op${opset})
    set(dir ${SS_GEN_DIR}/${case})
    set(io ${dir}/prompt.npy ${dir}/ref_tokens.npy)
    add_test(NAME gen_export_${case}
             COMMAND ${SS_FIXTURE} ${dir} -- ${SS_PY} ${SS_TEST_DIR}/generative/models.py
                     --family ${family} --opset ${opset} --out ${dir})
    set_tests_properties(gen_export_${case} PROPERTIES FIXTURES_SETUP gen_${case} LABELS generative)
    add_test(NAME gen_greedy_${case} COMMAND gen_greedy ${dir}/model.onnx ${io})
    set_tests_properties(gen_greedy_${case} PROPERTIES FIXTURES_REQUIRED gen_${case} TIMEOUT 60
                         LABELS generative)
    if(TARGET shardserve)
      # 8 ranks: more ranks than heads, so attention stays whole (and exact) on every rank
      set(rank_counts 2 4)
      if(opset EQUAL 17)
        list(APPEND rank_counts 8)
      endif()
      foreach(ranks ${rank_counts})
        add_test(NAME gen_greedy_${case}_tp${ranks}
                 COMMAND ${SS_TEST_DIR}/generative/shard_greedy.sh $<TARGET_FILE:shardserve>
                         $<TARGET_FILE:gen_greedy> ${dir} ${ranks} 1)
        set_tests_properties(gen_greedy_${case}_tp${ranks} PROPERTIES FIXTURES_REQUIRED gen_${case}
                             TIMEOUT 120 LABELS generative)
      endforeach()
      # 2 pipeline stages, alone and with 2 ranks each: every stage keeps its own layers' KV cache,
      # is given the (small) inputs itself and rebuilds the dynamic shapes of what it receives
      foreach(ranks 2 4)
        add_test(NAME gen_greedy_${case}_pp2_ranks${ranks}
                 COMMAND ${SS_TEST_DIR}/generative/shard_greedy.sh $<TARGET_FILE:shardserve>
                         $<TARGET_FILE:gen_greedy> ${dir} ${ranks} 2)
        set_tests_properties(gen_greedy_${case}_pp2_ranks${ranks} PROPERTIES
                             FIXTURES_REQUIRED gen_${case} TIMEOUT 120 LABELS generative)
      endforeach()
      # the KV cache in each rank's block pool (shard --kv-pool, PagedAttention): whole (1 rank),
      # head-parallel over 2 and 4 ranks, and in 2 pipeline stages of 2 ranks; no re-planning
      # during decode
      set(kv_splits 1x1 2x1 4x1 4x2)
      if(opset EQUAL 17)
        list(APPEND kv_splits 8x1) # more ranks than heads: PagedAttention whole on each rank
      endif()
      foreach(split ${kv_splits})
        string(REPLACE "x" ";" split ${split})
        list(GET split 0 ranks)
        list(GET split 1 stages)
        add_test(NAME gen_greedy_${case}_kvpool_${ranks}x${stages}
                 COMMAND ${SS_TEST_DIR}/generative/shard_greedy.sh $<TARGET_FILE:shardserve>
                         $<TARGET_FILE:gen_greedy> ${dir} ${ranks} ${stages} --kv-pool)
        set_tests_properties(gen_greedy_${case}_kvpool_${ranks}x${stages} PROPERTIES
                             FIXTURES_REQUIRED gen_${case} TIMEOUT 120 LABELS generative)
      endforeach()
      set_tests_properties(gen_greedy_${case}_kvpool_1x1 PROPERTIES FIXTURES_SETUP kv_${case})
      # sequences of one session's pool: two in one batch at different positions, a full pool
      add_test(NAME test_kvpool_session_${case}
               COMMAND test_kvpool_session ${dir}/shards_1x1_kvpool/device0/model.onnx ${io})
      set_tests_properties(test_kvpool_session_${case} PROPERTIES FIXTURES_REQUIRED kv_${case}
                           TIMEOUT 60 LABELS generative)
      # a pool too small for the 71 tokens: the step that outgrows it fails naming the pool
      add_test(NAME gen_greedy_${case}_kvpool_full
               COMMAND gen_greedy --kv-cache-mb 0.02 ${dir}/shards_1x1_kvpool/device0/model.onnx
                       ${io})
      set_tests_properties(gen_greedy_${case}_kvpool_full PROPERTIES
                           FIXTURES_REQUIRED kv_${case} LABELS generative
                           PASS_REGULAR_EXPRESSION
                           "KV cache pool full: all [12] blocks of 16 tokens \\(0.02 MiB")
      # over the mpi backend (mpirun inside a loopback-only network namespace): 4 ranks, then
      # 2 ranks x 2 stages
      if(SS_COMM_HAVE_MPI AND opset EQUAL 17)
        foreach(split "4;1" "4;2")
          list(GET split 0 ranks)
          list(GET split 1 stages)
          add_test(NAME gen_greedy_${case}_mpi_${ranks}x${stages}
                   COMMAND ${SS_TEST_DIR}/generative/shard_greedy_mpi.sh $<TARGET_FILE:shardserve>
                           $<TARGET_FILE:gen_greedy> ${dir} ${ranks} ${stages})
          set_tests_properties(gen_greedy_${case}_mpi_${ranks}x${stages} PROPERTIES
                               FIXTURES_REQUIRED gen_${case} TIMEOUT 150 LABELS generative)
        endforeach()
        add_test(NAME gen_greedy_${case}_mpi_kvpool_4x1
                 COMMAND ${SS_TEST_DIR}/generative/shard_greedy_mpi.sh $<TARGET_FILE:shardserve>
                         $<TARGET_FILE:gen_greedy> ${dir} 4 1 --kv-pool)
        set_tests_properties(gen_greedy_${case}_mpi_kvpool_4x1 PROPERTIES
                             FIXTURES_REQUIRED gen_${case} TIMEOUT 150 LABELS generative)
      endif()
    endif()
  endforeach()
endforeach()

# The token-loop engine (src/generate) on the --kv-pool model in-process: greedy equals PyTorch,
# and 32 concurrent requests (greedy and sampled, different prompt lengths) equal their runs
# alone, also on a pool small enough to preempt.
add_executable(gen_engine ${SS_TEST_DIR}/generative/gen_engine.c)
target_include_directories(gen_engine PRIVATE ${SS_TEST_DIR})
target_link_libraries(gen_engine PRIVATE ss_generate ss_runtime)
if(TARGET shardserve)
  foreach(case gpt2_op17 llama_op17)
    set(dir ${SS_GEN_DIR}/${case})
    add_test(NAME gen_engine_${case}
             COMMAND gen_engine ${dir}/shards_1x1_kvpool/device0/model.onnx ${dir}/prompt.npy
                     ${dir}/ref_tokens.npy)
    set_tests_properties(gen_engine_${case} PROPERTIES FIXTURES_REQUIRED kv_${case} TIMEOUT 120
                         LABELS generative)
  endforeach()
endif()

# Generation served end to end (tests/generative/test_serve_generate.py): a generative servable
# ("generate" in servable.json) over the --kv-pool model, real serve + agents, gRPC and REST;
# greedy equals PyTorch whole and over 2 ranks, 32 concurrent requests equal their runs alone.
if(TARGET shardserve)
  foreach(case gpt2_op17 llama_op17)
    add_test(NAME gen_serve_${case}
             COMMAND ${SS_PY} ${SS_TEST_DIR}/generative/test_serve_generate.py
                     ${SS_GEN_DIR}/${case})
    set_tests_properties(gen_serve_${case} PROPERTIES FIXTURES_REQUIRED gen_${case} TIMEOUT 300
                         LABELS generative
                         ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy=")
  endforeach()
endif()

# An attention whose scores get a learned per-head bias (not a mask) is left alone by --kv-pool,
# which would otherwise drop the bias: the rewrite finds nothing to replace and says so.
if(TARGET shardserve)
  set(dir ${SS_GEN_DIR}/gpt2_score_bias)
  add_test(NAME gen_export_gpt2_score_bias
           COMMAND ${SS_FIXTURE} ${dir} -- ${SS_PY} ${SS_TEST_DIR}/generative/models.py
                   --family gpt2 --score-bias --out ${dir})
  set_tests_properties(gen_export_gpt2_score_bias PROPERTIES FIXTURES_SETUP gen_score_bias
                       LABELS generative)
  add_test(NAME shard_kvpool_leaves_score_bias
           COMMAND shardserve shard ${dir}/model.onnx --ranks 1 --kv-pool --out ${dir}/kv)
  set_tests_properties(shard_kvpool_leaves_score_bias PROPERTIES FIXTURES_REQUIRED gen_score_bias
                       LABELS generative
                       PASS_REGULAR_EXPRESSION "--kv-pool: no attention over a past/present KV")
endif()

# Tokens streamed over gRPC (tests/generative/test_gen_stream.py): PredictStream, KServe's
# ModelStreamInfer and `infer --stream` equal the unary reply, whole and over 2 ranks; a client
# that goes away (stream dropped, unary deadline) frees its sequence at once while another
# client's request runs on unaffected; bad input over a stream gets an error naming it.
if(TARGET shardserve)
  foreach(case gpt2_op17)
    add_test(NAME gen_stream_${case}
             COMMAND ${SS_PY} ${SS_TEST_DIR}/generative/test_gen_stream.py ${SS_GEN_DIR}/${case})
    set_tests_properties(gen_stream_${case} PROPERTIES FIXTURES_REQUIRED gen_${case} TIMEOUT 300
                         LABELS generative
                         ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python:${CMAKE_BINARY_DIR}/python_proto;no_proxy=*;http_proxy=;https_proxy=")
  endforeach()
endif()

# Generation over REST (tests/generative/test_gen_rest.py): Triton's generate / generate_stream
# (Server-Sent Events) and OpenAI's /v1/completions (token ids, or text with a tokenizer.json the
# test writes), streamed == whole == PyTorch's greedy tokens on 1 and 2 ranks; a client that hangs
# up frees its sequence; bad requests get 4xx naming the field.
if(TARGET shardserve)
  add_test(NAME gen_rest_gpt2_op17
           COMMAND ${SS_PY} ${SS_TEST_DIR}/generative/test_gen_rest.py ${SS_GEN_DIR}/gpt2_op17)
  set_tests_properties(gen_rest_gpt2_op17 PROPERTIES FIXTURES_REQUIRED gen_gpt2_op17 TIMEOUT 300
                       LABELS generative
                       ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python;no_proxy=*;http_proxy=;https_proxy=")
endif()

# Stop strings in the worker's token loop (tests/generative/test_gen_stop.py): one cut, taken from
# PyTorch's greedy text, equal over MindSpore Predict/PredictStream, KServe ModelInfer/
# ModelStreamInfer, Triton's REST generate(_stream) and OpenAI's completions; streams never send
# text past it; a stop string that never appears runs to max_tokens; bad "stop" values named.
if(TARGET shardserve)
  add_test(NAME gen_stop_gpt2_op17
           COMMAND ${SS_PY} ${SS_TEST_DIR}/generative/test_gen_stop.py ${SS_GEN_DIR}/gpt2_op17)
  set_tests_properties(gen_stop_gpt2_op17 PROPERTIES FIXTURES_REQUIRED gen_gpt2_op17 TIMEOUT 300
                       LABELS generative
                       ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;PYTHONPATH=${CMAKE_SOURCE_DIR}/python:${CMAKE_BINARY_DIR}/python_proto;no_proxy=*;http_proxy=;https_proxy=")
endif()

# Vocabulary-parallel embedding and LM head (src/shard/vocab.c) on models whose vocabulary (131,
# prime) no rank count divides: GPT-2 ties the head to the embedding, Llama does not. Each rank
# holds ceil(131 / ranks) rows of each table (vocab_greedy.sh prints every rank's weight bytes) and
# 64 greedy tokens still equal PyTorch's over 2, 4 and 8 ranks, 2 stages, and with --kv-pool.
if(TARGET shardserve)
  foreach(family gpt2 llama)
    set(dir ${SS_GEN_DIR}/${family}_vocab131)
    add_test(NAME gen_export_${family}_vocab131
             COMMAND ${SS_FIXTURE} ${dir} -- ${SS_PY} ${SS_TEST_DIR}/generative/models.py
                     --family ${family} --vocab 131 --out ${dir})
    set_tests_properties(gen_export_${family}_vocab131 PROPERTIES
                         FIXTURES_SETUP gen_${family}_vocab131 LABELS generative)
    foreach(split "2;1" "4;1" "8;1" "4;2" "4;1;--kv-pool" "8;2;--kv-pool")
      list(GET split 0 ranks)
      list(GET split 1 stages)
      list(LENGTH split n)
      set(kv "")
      set(suffix "")
      if(n GREATER 2)
        set(kv --kv-pool)
        set(suffix _kvpool)
      endif()
      set(name gen_vocab_${family}_${ranks}x${stages}${suffix})
      add_test(NAME ${name}
               COMMAND ${SS_TEST_DIR}/generative/vocab_greedy.sh $<TARGET_FILE:shardserve>
                       $<TARGET_FILE:gen_greedy> ${dir} ${ranks} ${stages} ${kv})
      set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED gen_${family}_vocab131
                           TIMEOUT 120 LABELS generative)
    endforeach()
  endforeach()
endif()

# Generation served over MPI across two network-namespace hosts (test_gen_two_hosts.py): the
# vocab-131 models sharded with --kv-pool over 2 and 4 ranks, half on each host, and 16 ranks in
# 2 pipeline stages, one stage per host; greedy through gRPC and REST equals PyTorch. The 2-rank
# group also loses its host-B rank mid-generation: the request fails at once naming it, the
# launcher starts mpirun again and greedy equals PyTorch again. Exit 77 (skipped) where network
# namespaces cannot be made.
if(TARGET shardserve AND SS_COMM_HAVE_MPI)
  foreach(family gpt2 llama)
    add_test(NAME gen_two_hosts_${family}
             COMMAND ${SS_PY} ${SS_TEST_DIR}/generative/test_gen_two_hosts.py
                     ${SS_GEN_DIR}/${family}_vocab131)
    set_tests_properties(gen_two_hosts_${family} PROPERTIES
                         FIXTURES_REQUIRED gen_${family}_vocab131 TIMEOUT 600 SKIP_RETURN_CODE 77
                         LABELS generative RESOURCE_LOCK cluster
                         ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;no_proxy=*;http_proxy=;https_proxy=")
  endforeach()
endif()

# A model whose weights exceed one agent's memory limit (test_gen_cgroup.py): ~215 MB of GPT-2
# weights, each namespace host in a memory cgroup limited halfway between them and one 2-way
# shard's, weights held resident (SHARDSERVE_WEIGHTS=resident). The 1-rank servable's agent is
# OOM-killed and reported; over 2 ranks (one per host, vocabulary-parallel) every rank fits and
# greedy equals PyTorch. Named *two_hosts* like every test that starts ranks through mpirun:
# scripts/asan.sh runs those without leak detection (Open MPI's plugins keep memory until exit).
if(TARGET shardserve AND SS_COMM_HAVE_MPI)
  set(dir ${SS_GEN_DIR}/gpt2_mid)
  add_test(NAME gen_export_gpt2_mid
           COMMAND ${SS_FIXTURE} ${dir} -- ${SS_PY} ${SS_TEST_DIR}/generative/models.py
                   --family gpt2 --size mid --steps 16 --out ${dir})
  set_tests_properties(gen_export_gpt2_mid PROPERTIES FIXTURES_SETUP gen_gpt2_mid TIMEOUT 300
                       LABELS generative)
  add_test(NAME gen_two_hosts_cgroup_gpt2_mid
           COMMAND ${SS_PY} ${SS_TEST_DIR}/generative/test_gen_cgroup.py ${dir})
  set_tests_properties(gen_two_hosts_cgroup_gpt2_mid PROPERTIES FIXTURES_REQUIRED gen_gpt2_mid TIMEOUT 700
                       SKIP_RETURN_CODE 77 LABELS generative RESOURCE_LOCK cluster
                       ENVIRONMENT "SHARDSERVE=$<TARGET_FILE:shardserve>;no_proxy=*;http_proxy=;https_proxy=")
endif()
