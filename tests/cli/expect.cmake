# Runs one foldtron command line and checks its exit code and output.
#   -DCOMMAND="<binary>|arg|arg"  -DEXIT_CODE=N  -DEXPECT="regex|regex"  [-DREJECT="regex"]
# Every EXPECT regex must match stdout+stderr; REJECT must not. Lists are joined by '|'.
string(REPLACE "|" ";" COMMAND "${COMMAND}")
string(REPLACE "|" ";" EXPECT "${EXPECT}")
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}${err}")
if(NOT "${code}" STREQUAL "${EXIT_CODE}")
  message(FATAL_ERROR "exit code ${code}, expected ${EXIT_CODE}\n--- output ---\n${all}")
endif()
foreach(pattern IN LISTS EXPECT)
  if(NOT all MATCHES "${pattern}")
    message(FATAL_ERROR "output does not match '${pattern}'\n--- output ---\n${all}")
  endif()
endforeach()
if(DEFINED REJECT AND all MATCHES "${REJECT}")
  message(FATAL_ERROR "output matches rejected '${REJECT}'\n--- output ---\n${all}")
endif()
