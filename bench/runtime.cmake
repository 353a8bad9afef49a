# Runtime benchmarks (bench/RUNTIME.md): bench_runtime is driven by bench/run_runtime.sh side by
# side with onnxruntime-node; bench_gemm compares GEMM kernels on the MLP's shape.
if(TARGET ss_runtime)
  add_executable(bench_runtime ${CMAKE_CURRENT_LIST_DIR}/bench_runtime.c
                               ${CMAKE_CURRENT_LIST_DIR}/fma_peak.c)
  target_include_directories(bench_runtime PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime) # ops/onednn.h
  target_link_libraries(bench_runtime PRIVATE ss_runtime ss_core Threads::Threads m)

  if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64") # x86 intrinsics
    add_executable(bench_gemm ${CMAKE_CURRENT_LIST_DIR}/bench_gemm.c)
    target_compile_options(bench_gemm PRIVATE -O3)
    target_link_libraries(bench_gemm PRIVATE PkgConfig::OPENBLAS Threads::Threads m)
  endif()
endif()

# MatMul / Gemm per shape class under each SHARDSERVE_KERNELS mode (the basis of auto's choice).
if(TARGET ss_runtime)
  add_executable(bench_kernels ${CMAKE_CURRENT_LIST_DIR}/bench_kernels.c
                               ${CMAKE_CURRENT_LIST_DIR}/fma_peak.c)
  target_include_directories(bench_kernels PRIVATE ${CMAKE_SOURCE_DIR}/src/runtime
                                                   ${DNNL_INCLUDE_DIR}) # --int8 calls oneDNN
  target_link_libraries(bench_kernels PRIVATE ss_runtime ss_core ${DNNL_LIBRARY} Threads::Threads m)
endif()
