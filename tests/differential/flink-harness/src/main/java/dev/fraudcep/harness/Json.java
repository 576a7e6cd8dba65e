package dev.fraudcep.harness;

import com.fasterxml.jackson.databind.JsonNode;

/** Small helpers for reading case JSON with clear error messages. */
final class Json {

    private Json() {}

    static JsonNode required(JsonNode obj, String field) {
        JsonNode v = obj.get(field);
        if (v == null || v.isNull()) {
            throw new CaseFormatException("missing field \"" + field + "\" in " + obj);
        }
        return v;
    }

    static String requiredText(JsonNode obj, String field) {
        JsonNode v = required(obj, field);
        if (!v.isTextual()) {
            throw new CaseFormatException("field \"" + field + "\" must be a string in " + obj);
        }
        return v.asText();
    }

    static String text(JsonNode obj, String field) {
        return requiredText(obj, field);
    }

    static String optText(JsonNode obj, String field, String dflt) {
        JsonNode v = obj.get(field);
        if (v == null || v.isNull()) {
            return dflt;
        }
        if (!v.isTextual()) {
            throw new CaseFormatException("field \"" + field + "\" must be a string in " + obj);
        }
        return v.asText();
    }

    static boolean optBool(JsonNode obj, String field) {
        JsonNode v = obj.get(field);
        if (v == null || v.isNull()) {
            return false;
        }
        if (!v.isBoolean()) {
            throw new CaseFormatException("field \"" + field + "\" must be a boolean in " + obj);
        }
        return v.asBoolean();
    }

    static int requiredInt(JsonNode obj, String field) {
        JsonNode v = required(obj, field);
        if (!v.isIntegralNumber() || !v.canConvertToInt()) {
            throw new CaseFormatException("field \"" + field + "\" must be an int in " + obj);
        }
        return v.asInt();
    }

    static long requiredLong(JsonNode obj, String field) {
        JsonNode v = required(obj, field);
        if (!v.isIntegralNumber() || !v.canConvertToLong()) {
            throw new CaseFormatException("field \"" + field + "\" must be an integer in " + obj);
        }
        return v.asLong();
    }
}
