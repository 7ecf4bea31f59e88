# loftq_project_flags(target): warnings, and -march=native under LOFTQ_NATIVE, for the project's
# own executables (tests, examples, benchmarks); never for consumers of loftq::loftq.
function(loftq_project_flags target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion)
    if(LOFTQ_NATIVE)
      target_compile_options(${target} PRIVATE -march=native)
      if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
        # GCC 12 reports its own AVX-512 intrinsics, as Eigen uses them, as maybe uninitialized.
        target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
      endif()
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4)
  endif()
endfunction()
