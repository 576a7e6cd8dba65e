package dev.fraudcep.harness;

/**
 * The case itself does not follow CASE-FORMAT.md (or asks for something Flink's API cannot
 * express). Reported as {@code "CaseFormatException: ..."}, never confused with a Flink error.
 */
final class CaseFormatException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    CaseFormatException(String message) {
        super(message);
    }
}
