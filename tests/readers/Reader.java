// Call an API with tokend's token, read afresh for each request.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

public class Reader {
    static String accessToken(Path path) throws Exception {
        for (int i = 0; i < 300; i++) { // up to 30 s for tokend's first write
            try {
                return Files.readString(path).strip();
            } catch (NoSuchFileException e) {
                Thread.sleep(100);
            }
        }
        throw new IllegalStateException("no token at " + path);
    }

    public static void main(String[] args) throws Exception {
        String file = System.getenv().getOrDefault("TOKEN_FILE", "/run/tokend/blnk/access_token");
        HttpRequest request = HttpRequest.newBuilder(URI.create(System.getenv("API_URL")))
            .header("Authorization", "Bearer " + accessToken(Path.of(file)))
            .build();
        HttpResponse<String> response = HttpClient.newHttpClient()
            .send(request, HttpResponse.BodyHandlers.ofString());
        System.out.println(response.body());
        System.exit(response.statusCode() == 200 ? 0 : 1);
    }
}
