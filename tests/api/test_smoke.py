def test_login_and_me(client, admin):
    response = client.get("/api/auth/me", headers=admin)
    assert response.status_code == 200
    assert response.json["role"] == "admin"
