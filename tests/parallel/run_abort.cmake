# Runs abort_job under mpirun and checks that the job fails fast with the expected message.
#   -DMPIEXEC=... -DNP=4 -DBINARY=... -DMODE=throw|stall -DEXPECT=regex -DMAX_SECONDS=N
string(TIMESTAMP start "%s")
execute_process(COMMAND ${MPIEXEC} -np ${NP} --oversubscribe ${BINARY} ${MODE}
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
string(TIMESTAMP stop "%s")
math(EXPR elapsed "${stop} - ${start}")
set(all "${out}${err}")
if("${code}" STREQUAL "0")
  message(FATAL_ERROR "the job exited 0 although a rank failed\n${all}")
endif()
if(NOT all MATCHES "${EXPECT}")
  message(FATAL_ERROR "output does not match '${EXPECT}'\n${all}")
endif()
if(elapsed GREATER ${MAX_SECONDS})
  message(FATAL_ERROR "the job took ${elapsed} s to end, more than ${MAX_SECONDS} s\n${all}")
endif()
message(STATUS "job ended with code ${code} after ${elapsed} s")
